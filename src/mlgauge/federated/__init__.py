"""Cost-effective federated learning: choose clients per round K and local iterations E to minimize
time and energy to a target loss (cost model, convergence bound, planner, estimator), and measure
it with a FedAvg simulator."""
