"""txpool"""
