"""Qt widgets that draw what the bridge hands them. No engine logic here."""
