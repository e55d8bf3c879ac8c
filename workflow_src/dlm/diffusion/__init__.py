"""Noise schedules, the DUO integral operator, forward processes and posteriors."""
