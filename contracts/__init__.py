"""What data must look like: the taxonomy, the schemas, the GX suites and the error tree.

Modules are the public surface; import names from them (`from contracts.errors import ...`).
"""

__all__ = ["dictionary", "errors", "input_files", "journeys", "schemas", "suites", "taxonomy"]
