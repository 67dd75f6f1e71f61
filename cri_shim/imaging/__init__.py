"""Images: references, registry pulls, content store, safe layer unpacking, overlay snapshots."""
