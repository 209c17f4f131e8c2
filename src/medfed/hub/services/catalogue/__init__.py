"""The catalogue: dataset lifecycle, versions, persistent ids, metadata, search, Zenodo."""
