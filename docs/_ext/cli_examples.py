"""Examples for the CLI reference, one list per ``pyrovae`` verb: each is
``(command line, what it does)``. The CLI page checks that every verb has
examples and parses every line with the real argument parser, so an
example that no longer parses stops the build."""

EXAMPLES = {
    "train": [
        ("pyrovae train --out runs/first",
         "train the default model (the Burda et al. MLP VAE on dynamically binarized MNIST)"),
        ("pyrovae train --config experiments/configs/vae_mnist.yaml --set train.epochs=3 --out runs/short",
         "a config file, with one key overridden"),
        ("pyrovae train --set model.prior='{name: vamp, num_components: 50}' --set model.latent_dim=16 --out runs/vamp",
         "swap in another registered prior from the command line"),
        ("pyrovae train --resume runs/short --set train.epochs=10",
         "continue a run from its last checkpoint, for more epochs"),
        ("torchrun --nproc_per_node=2 -m pyrovae train --config cfg.yaml --out runs/ddp",
         "data-parallel training: every process runs the same command"),
    ],
    "evaluate": [
        ("pyrovae evaluate runs/first --iw-samples 5000",
         "the literature's test log-likelihood (K = 5000); writes runs/first/eval.json"),
        ("pyrovae evaluate runs/first -k 100 --limit 1000 --which best --threads 1",
         "a quick estimate on 1000 test points, with the best-validation weights"),
        ("pyrovae evaluate runs/first --probe",
         "also score k-NN, logistic regression and k-means on the latent means"),
        ("pyrovae evaluate runs/first --ais --points 100 --ais-steps 1000 --chains 16",
         "also AIS on the first 100 test points, against IS on the same points (an ais block in eval.json)"),
    ],
    "bdmc": [
        ("pyrovae bdmc runs/first --points 50 --ais-steps 1000 --chains 16",
         "is T = 1000 long enough? The gap between the bounds on 50 simulated points; writes runs/first/bdmc.json"),
    ],
    "list": [
        ("pyrovae list", "every registry's components with their options and defaults"),
    ],
    "plot": [
        ("pyrovae plot runs/first", "every figure the model allows, in runs/first/plots/"),
        ("pyrovae plot runs/first --only samples manifold --seed 3", "just two figures, other samples"),
    ],
    "sample": [
        ("pyrovae sample runs/first -n 100 --out samples.png", "a 10 x 10 grid of decoder means"),
        ("pyrovae sample runs/cvae --label 7 --out sevens.npy", "samples of one class from a conditional model, as an array"),
    ],
    "encode": [
        ("pyrovae encode runs/first --split test --out codes.npz",
         "the latent means, scales and labels of the test set"),
    ],
    "impute": [
        ("pyrovae impute runs/first --mask center:0.5",
         "hide the central half-side square of each test digit and recover it"),
        ("pyrovae impute runs/first --mask random:0.7 --method gibbs --steps 200 --limit 200",
         "hide 70% of the pixels at random; Metropolis-within-Gibbs instead of importance resampling"),
    ],
}
