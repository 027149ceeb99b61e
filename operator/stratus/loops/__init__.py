"""Long-running loops: executors and timers, in modules named for what they are.

A controller's kopf daemon or timer only parses the body and hands over to a loop here;
a loop reads through drivers/, asks core/ what to do, does it through drivers/ and
writes status. Each module's docstring says what its loop owns.
"""
