"""`python -m lit_recs {fit,validate,test,predict} ...`"""

from lit_recs.cli import main

if __name__ == "__main__":
    main()
