"""The package's version, in a module of its own: any module may read it without importing the
package (``evocluster/__init__`` imports it from here).  pyproject.toml states the same version
(``[project] version``): change both."""

__version__ = "0.1.0"
