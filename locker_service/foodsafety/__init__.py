"""Food safety you can prove: the jurisdiction profiles a site holds food under, and the watch
over one order's food (its clock and its temperature excursions). Pure: no I/O, no clock of its
own; the timer loop feeds it the compartment's readings and acts on its verdict."""
