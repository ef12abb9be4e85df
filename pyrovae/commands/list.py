"""``pyrovae list``: the registered components with their options and defaults."""


def add_parser(sub):
    p = sub.add_parser("list", help="list registered components with their options and defaults")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    from ..data import datasets
    from ..components.guides import guides
    from ..components.likelihoods import likelihoods
    from ..components.nets import decoders, encoders
    from ..infer.objectives import objectives
    from ..training.optim import optimizers, schedules
    from ..components.priors import priors

    for registry in (priors, likelihoods, encoders, decoders, guides, datasets, objectives, optimizers, schedules):
        print(f"{registry.kind}s:")
        print(registry.describe())
    return 0
