"""The live board (`tunelab board`): a sweep served on localhost. Flask is imported only here."""
