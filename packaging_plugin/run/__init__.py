"""Running a linux package: the smoke run in a child process, and the model runtime it drives."""
