"""FedAvg on Flower with a planned (K, E): a ServerApp that samples K nodes a round and sends E, and a
ClientApp that trains and reports what the round cost it, so plans can be tested on real devices."""
