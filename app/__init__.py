"""Streamlit app over training runs and results stores: `streamlit run app/main.py -- --runs DIR …`."""
