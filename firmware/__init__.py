"""Line adapters and devices: voice modem, virtual modem, SIP, GPIO."""
