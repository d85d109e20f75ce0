"""Data: the Fashion-MNIST reader, the MultiFashion builder and the data sources that a
task spec can name."""
