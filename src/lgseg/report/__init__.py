"""Tables and figures made from pipeline outputs."""
