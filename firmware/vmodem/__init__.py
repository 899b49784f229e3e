"""The parts of the virtual modem; ``firmware/virtual_modem.py`` puts them together as VirtualModem."""
