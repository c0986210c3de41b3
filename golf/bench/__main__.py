import importlib
import pkgutil
import sys

import golf.bench


def main(argv):
    names = sorted(m.name for m in pkgutil.iter_modules(golf.bench.__path__) if not m.name.startswith("_"))
    if not argv or argv[0] not in names:
        print(f"usage: python -m golf.bench {{{','.join(names)}}} [args]", file=sys.stderr)
        return 2
    return importlib.import_module(f"golf.bench.{argv[0]}").main(argv[1:]) or 0


sys.exit(main(sys.argv[1:]))
