"""Generation: requests, PNG parameters, grids, batch jobs, debias runs."""
