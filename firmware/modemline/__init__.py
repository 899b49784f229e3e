"""The parts of the modem line; ``firmware/modem_line.py`` puts them together as ModemLine."""
