"""``python -m wage_data``: the ``wage-data`` command (:func:`wage_data.download.main`)."""

from wage_data.download import main

if __name__ == "__main__":
    main()
