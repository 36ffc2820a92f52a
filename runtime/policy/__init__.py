"""The contact policy: caps, de-dup windows, quiet hours, opt-outs, capacity and arbitration."""
