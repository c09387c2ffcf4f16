"""Images (IDX, .npz, folders of pictures): reading, cleaning, validation, pooled views and k-means
segments."""
