"""``python -m diffnb.evaluation PRESET [--protocol P] [--seed S]``: score one preset
(diffnb.evaluation.scoring.main)."""
from diffnb.evaluation.scoring import main

if __name__ == "__main__":
    main()
