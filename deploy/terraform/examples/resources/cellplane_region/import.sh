# A region is imported by its name.
terraform import cellplane_region.us_east us-east
