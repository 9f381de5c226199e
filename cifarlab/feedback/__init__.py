"""What users tell the app about its answers: every answer stored with an id, flags, a review queue, exports."""
