"""Probe curves → onsets → scaling fits, tables, figures and a report (Appendix B, §V)."""
