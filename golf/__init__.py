"""golf: tested, swappable pieces for OpenAI's Parameter Golf challenge."""
