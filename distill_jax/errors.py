"""One exception type for problems the user can fix; `main` prints it as one line."""


class UserError(Exception):
  """Bad input or configuration. The message names the problem and the fix."""
