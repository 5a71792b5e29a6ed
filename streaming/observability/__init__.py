"""What every long-running process shares for operating it: one logging setup (`logs`) and its
Prometheus metrics (`metrics`)."""
