# A cell is imported by its id.
terraform import cellplane_cell.us_east_a us-east-a
