"""``pyrovae list``: the registered components with their options and defaults."""


def add_parser(sub):
    p = sub.add_parser("list", help="list registered components with their options and defaults")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    from ..data import datasets
    from ..guides import guides
    from ..likelihoods import likelihoods
    from ..nets import decoders, encoders
    from ..optim import objectives, optimizers, schedules
    from ..priors import priors

    for registry in (priors, likelihoods, encoders, decoders, guides, datasets, objectives, optimizers, schedules):
        print(f"{registry.kind}s:")
        print(registry.describe())
    return 0
