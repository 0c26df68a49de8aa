"""The labeling pages of the Streamlit app (app.py wires them into st.navigation).

Each module here is a page script run by Streamlit; `common` holds what they share
(store, settings, editor identity, error display) and is imported by explorer's pages too.
"""
