"""poormanci: continuous integration for Pagure pull requests with Jenkins and the Fedora message bus."""

from poormanci._core import ConfigError, Core, check_config, read_status

__all__ = ["ConfigError", "Core", "check_config", "read_status"]
