"""``python -m diffnb.data``: check that Fashion-MNIST is found and print its summary
(scripts/setup.sh runs it)."""
from diffnb.data.fashion_mnist import main

if __name__ == "__main__":
    main()
