"""What was screened and what needs a human: text, CSV/JSON and HTML reports."""
