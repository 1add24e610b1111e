"""The data layer: datasets (digits embedded, CIFAR/SVHN/FashionMNIST from their files), splits and
loaders, and image batches held on the device. Imports only the package root (errors)."""
