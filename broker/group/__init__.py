"""Consumer groups: the group coordinator and the records it keeps in __consumer_offsets."""
