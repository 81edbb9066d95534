"""Streamlit helpers shared by the dashboard pages (the engine, healcore/, never imports Streamlit)."""
