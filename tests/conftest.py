pytest_plugins = [
    "tests.fixtures.media",
    "tests.fixtures.db",
    "tests.fixtures.app",
    "tests.fixtures.processes",
    "tests.fixtures.s3",
    "tests.fixtures.thumbnail_media",
    "tests.fixtures.probers",
]
