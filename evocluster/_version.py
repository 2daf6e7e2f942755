"""The package's version, in a module of its own: any module may read it without importing the
package (``evocluster/__init__`` imports it from here), and the one place it is written:
pyproject.toml reads it (``[tool.setuptools.dynamic]``)."""

__version__ = "0.1.0"
