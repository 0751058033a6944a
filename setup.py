"""Packaging for earthsnap, read from settings.ini as nbdev's own template does."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read(Path(__file__).parent / "settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

requirements = cfg.get("requirements", "").split()
dev_requirements = cfg.get("dev_requirements", "").split()
sagemaker_requirements = cfg.get("sagemaker_requirements", "").split()
lab_requirements = cfg.get("lab_requirements", "").split()
docs_requirements = cfg.get("docs_requirements", "").split()
zoo_requirements = cfg.get("zoo_requirements", "").split()
licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
lic = licenses[cfg["license"]]
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable", "6 - Mature"]
readme = Path(__file__).parent / "README.md"

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else cfg["description"],
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=lic[0],
    url=cfg["git_url"],
    keywords=cfg["keywords"],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"]) - 1],
        "Intended Audience :: " + cfg["audience"],
        "License :: " + lic[1],
        "Natural Language :: " + cfg["language"],
        "Programming Language :: Python :: 3 :: Only",
    ],
    python_requires=">=" + cfg["min_python"],
    packages=setuptools.find_packages(include=["earthsnap", "earthsnap.*"]),
    include_package_data=True,
    package_data={"earthsnap.console": ["templates/*.html", "static/*"],
                  "earthsnap.access": ["common-passwords.txt.gz", "common-passwords.LICENSE"],  # check_password
                  "earthsnap": ["project_template/*", "project_template/pipeline/*"]},  # what `earthsnap init` writes
    install_requires=requirements,
    extras_require={"dev": dev_requirements, "sagemaker": sagemaker_requirements, "lab": lab_requirements, "docs": docs_requirements, "zoo": zoo_requirements},
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
        "earthsnap.step_kinds": cfg.get("step_kinds", "").split(),
        "earthsnap.registry_backends": cfg.get("registry_backends", "").split(),
    },
    zip_safe=False,
)
