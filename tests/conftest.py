import sys
from pathlib import Path

# Lets tests import the helper module tests/reference_cases.py.
sys.path.insert(0, str(Path(__file__).parent))
