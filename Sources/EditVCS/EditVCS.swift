/// The mvc repository under `.mvc/`, on libgit2.
