"""Pod networking: CNI configuration, plugin execution, results."""
