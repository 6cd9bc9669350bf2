"""Where guides come from and what they are worth: sources (near future, self, teacher traces or model,
replay, another run's checkpoint or pool), bank (the guide bank of an intervention's window), measure
(the engine that measures Q, V and S of a source: `npo signal`, AutoNPO)."""
