"""``pyrovae list``: every registry's entries with their options and defaults."""


def add_parser(sub):
    p = sub.add_parser("list", help="list registered components, models, data sets and the rest, with their options")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    from ..registry import all_registries

    for registry in all_registries():
        print(f"{registry.kind}s:")
        print(registry.describe())
    return 0
