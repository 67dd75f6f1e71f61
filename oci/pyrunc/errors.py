"""The error type every pyrunc command reports; messages follow runc's wording where it has one,
so an adapter that maps runc messages works unchanged."""


class PyruncError(Exception):
    pass


NOT_EXIST = "container does not exist"
ALREADY_EXISTS = "container with given ID already exists"
