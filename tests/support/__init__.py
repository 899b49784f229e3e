"""The shared test harness: free ports, local receivers (HTTP webhook, SMTP), the web rig helpers and
the daemon process. Test modules import from here, never from each other."""
