"""Prints the network and its parameter count."""


def experience(self):
    net = self.model.net
    print(net)
    print(f"Parameters: {sum(p.numel() for p in net.parameters()):,}")
