"""The wheel leaves out this repository's own Django project: its settings, root URLconf and WSGI
module (`web/settings.py`, `web/urls.py`, `web/wsgi.py`) and the demo shop (`web.shop`, left out by
pyproject.toml's package list). What a user's project needs (the engine, the scheduler, the API,
the dashboard, the webhooks and `web.routes`) is shipped; `tests/test_packaging.py` checks the list.

setuptools has no option that leaves out single modules of a shipped package, hence this hook;
everything else about the build is in pyproject.toml."""
from setuptools import setup
from setuptools.command.build_py import build_py

PROJECT_ONLY = {("web", "settings"), ("web", "urls"), ("web", "wsgi")}


class BuildPyWithoutTheProject(build_py):
    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if (m[0], m[1]) not in PROJECT_ONLY]


setup(cmdclass={"build_py": BuildPyWithoutTheProject})
