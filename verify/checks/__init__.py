"""One module per claim; importing this package imports (and so registers) every check module.

Modules are discovered, not listed, so adding a check is adding a file."""
import importlib
import pkgutil

from verify.checks._result import CheckResult, compare

__all__ = ["CheckResult", "compare"]

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
