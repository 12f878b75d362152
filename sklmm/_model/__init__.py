"""What the user asked for, as data: the random-effects bar syntax, terms and
their Lambda template, lme4's variance-parameter scale, and input validation."""
