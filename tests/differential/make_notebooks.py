"""Write the differential corpus: notebooks in the shape of public ones, cells of our own.

Each notebook below is in the "percent" format: a line ``# %%`` starts a code cell, a line
``# %% [markdown]`` a markdown cell (its lines lose their leading ``# ``). Run

    python tests/differential/make_notebooks.py

to (re)write tests/differential/project/notebooks/*.ipynb (nbformat v4, stable cell ids, no
outputs). The corpus is a project as users have one: the notebooks in ``notebooks/``, beside
``data/`` (read as ``../data``), ``images/`` and ``src/`` (shipped as they are, not written
here). It uses only the standard library, IPython, numpy, pandas and matplotlib; it makes no
network access and writes files only in its project (the test runs each notebook in a fresh
copy of it, a git repository, so the kernel's workspace is the project).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent / "project" / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

NOTEBOOKS: dict[str, str] = {}

NOTEBOOKS["01-python-state"] = r'''
# %% [markdown]
# # Inventory with plain Python
# State built in one cell is used by the next ones.
# %%
inventory = {"apples": 12, "pears": 7, "plums": 30}
total = sum(inventory.values())
total
# %%
def restock(name, amount=10):
    inventory[name] = inventory.get(name, 0) + amount
    return inventory[name]

restock("pears"), restock("kiwis", 4)
# %%
for name, count in sorted(inventory.items()):
    print(f"{name:<8}{count:>4}")
# %%
class Basket:
    def __init__(self, *items):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __repr__(self):
        return f"Basket({', '.join(self.items)})"

basket = Basket("apples", "plums")
basket
# %%
len(basket), basket.items[-1]
# %%
squares = [n * n for n in range(12)]
evens = {n: n % 2 == 0 for n in squares[:5]}
print(squares)
evens
# %%
x = 10
x += 5
# %%
x
# %%
import math
round(math.pi * x ** 2, 4)
# %%
None
# %%
print("done"); total * 2
'''

NOTEBOOKS["02-errors-and-recovery"] = r'''
# %% [markdown]
# # Errors, and the cells after them
# %%
values = [4, 8, 15, 16, 23, 42]
mean = sum(values) / len(values)
mean
# %%
values[10]
# %%
print("still running")
mean * 2
# %%
ratio = mean / 0
# %%
ratio
# %%
lookup = {"a": 1}
lookup["b"]
# %%
int("forty-two")
# %%
"total: " + 5
# %%
values.append(99)
values[-3:]
# %%
None.upper()
# %%
len(values)
'''

NOTEBOOKS["03-custom-exceptions"] = r'''
# %%
class ValidationError(Exception):
    """Raised when a record is invalid."""

def validate(record):
    if "id" not in record:
        raise ValidationError(f"record without id: {record}")
    return record["id"]

validate({"id": 7})
# %%
validate({"name": "x"})
# %%
try:
    validate({})
except ValidationError as err:
    print("caught:", err)
# %%
def parse(text):
    try:
        return int(text)
    except ValueError as err:
        raise RuntimeError("could not parse " + repr(text)) from err

parse("12")
# %%
parse("twelve")
# %%
assert parse("3") == 4, "three is not four"
# %%
def countdown(n):
    return countdown(n - 1)

countdown(5)
# %%
raise ExceptionGroup("several problems", [ValueError("bad value"), TypeError("bad type")])
# %%
next(iter([]))
# %%
import sys
sys.exit("stopping here")
# %%
print("after the exit")
countdown.__name__
'''

NOTEBOOKS["04-syntax-errors"] = r'''
# %%
print("before the syntax errors")
# %%
def broken(:
    pass
# %%
if True:
print("not indented")
# %%
text = "unterminated
# %%
total = 1 +
# %%
print("after the syntax errors")
# %%
eval("1 +* 2")
# %%
exec("y = 5")
y * 2
# %%
compile("return 1", "snippet", "exec")
# %%
square = lambda v: v * v
square(9)
'''

NOTEBOOKS["05-library-errors"] = r'''
# %%
import json
import numpy as np
import pandas as pd
# %%
np.ones(3) + np.ones(4)
# %%
frame = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
frame["c"]
# %%
json.loads("{bad json}")
# %%
open("does-not-exist.txt")
# %%
import not_a_real_package
# %%
np.arange(3).reshape(2, 2)
# %%
frame.loc[5]
# %%
pd.to_datetime("not a date")
# %%
b"\xff\xfe".decode("utf-8")
# %%
frame.sum()
'''

NOTEBOOKS["06-numpy-basics"] = r'''
# %% [markdown]
# # NumPy arrays
# %%
import numpy as np
np.__version__
# %%
a = np.arange(12).reshape(3, 4)
a
# %%
a.dtype, a.shape, a.ndim
# %%
print(a * 2.5)
# %%
a.sum(axis=0), a.mean(axis=1)
# %%
rng = np.random.default_rng(42)
sample = rng.normal(size=(3, 3))
sample
# %%
np.set_printoptions(precision=3, suppress=True)
sample
# %%
b = np.linspace(0, 1, 5)
b[:, np.newaxis] * b
# %%
np.where(a % 2 == 0, a, -1)
# %%
np.eye(3, dtype=int)
# %%
np.array(["x", "yy"]), np.array([1.5, np.nan, np.inf])
'''

NOTEBOOKS["07-numpy-indexing"] = r'''
# %%
import numpy as np
rng = np.random.default_rng(0)
data = rng.integers(0, 100, size=20)
data
# %%
mask = data > 50
data[mask], mask.sum()
# %%
order = np.argsort(data, kind="stable")[:5]
order, data[order]
# %%
np.sort(data)[::-1][:5]
# %%
people = np.array([("Ana", 31, 1.62), ("Bo", 25, 1.80), ("Cy", 40, 1.75)],
                  dtype=[("name", "U10"), ("age", "i4"), ("height", "f8")])
people
# %%
people["age"].mean(), people[people["height"] > 1.7]["name"]
# %%
m = np.array([[2.0, 1.0], [1.0, 3.0]])
np.linalg.inv(m)
# %%
np.linalg.eigvalsh(m)
# %%
np.linalg.inv(np.zeros((2, 2)))
# %%
big = np.arange(1_000_000)
big.sum(), big.nbytes
# %%
with np.printoptions(threshold=5):
    print(np.arange(100))
'''

NOTEBOOKS["08-pandas-series"] = r'''
# %%
import numpy as np
import pandas as pd
# %%
s = pd.Series([3.5, np.nan, 1.25, 8.0], index=list("abcd"), name="reading")
s
# %%
s.describe()
# %%
s.dropna() * 2
# %%
s.fillna(s.mean()).round(2)
# %%
colors = pd.Series(["red", "blue", "red", "green", "red"])
colors.value_counts()
# %%
colors.str.upper().tolist()
# %%
s["b":"d"]
# %%
s.index.tolist(), s.dtype
# %%
pd.Series(range(3), index=pd.date_range("2024-01-01", periods=3))
'''

NOTEBOOKS["09-pandas-frames"] = r'''
# %% [markdown]
# # Sales by region
# %%
import pandas as pd
# %%
sales = pd.DataFrame({
    "region": ["north", "south", "north", "east", "south", "east"],
    "product": ["tea", "tea", "coffee", "coffee", "cocoa", "tea"],
    "units": [12, 7, 3, 9, 4, 11],
    "price": [2.5, 2.5, 4.0, 4.0, 3.25, 2.5],
})
sales
# %%
sales.head(3)
# %%
sales["revenue"] = sales.units * sales.price
sales.groupby("region").revenue.sum()
# %%
sales.pivot_table(index="region", columns="product", values="units", aggfunc="sum",
                  fill_value=0)
# %%
targets = pd.DataFrame({"region": ["north", "south", "east"], "target": [40, 30, 50]})
merged = sales.merge(targets, on="region")
merged.tail(2)
# %%
print(sales.describe())
# %%
sales.info()
# %%
sales.sort_values("revenue", ascending=False).reset_index(drop=True).iloc[:3]
# %%
display(sales.dtypes)
sales.shape
# %%
sales.to_dict("records")[0]
'''

NOTEBOOKS["10-pandas-time-series"] = r'''
# %%
import numpy as np
import pandas as pd
# %%
days = pd.date_range("2023-01-01", periods=60, freq="D")
temps = pd.Series(10 + np.sin(np.arange(60) / 5) * 4, index=days)
temps.head()
# %%
temps.resample("W").mean()
# %%
temps.rolling(7).mean().dropna().tail(3)
# %%
temps.index.day_name()[:4]
# %%
temps["2023-02"].max()
# %%
frame = temps.to_frame("temp")
frame["month"] = frame.index.month
frame.groupby("month").temp.agg(["min", "max"])
# %%
pd.Timestamp("2024-03-10 12:00") + pd.Timedelta(hours=36)
# %%
pd.period_range("2023-01", periods=3, freq="M")
# %%
temps.diff().abs().idxmax()
'''

NOTEBOOKS["11-pandas-styler"] = r'''
# %%
import pandas as pd
# %%
scores = pd.DataFrame({"math": [81, 92, 67, 74], "art": [88, 71, 95, 60],
                       "music": [70, 85, 77, 90]}, index=["Ann", "Ben", "Cleo", "Dev"])
scores
# %%
scores.style.highlight_max(color="lightgreen")
# %%
scores.style.format("{:.1f}").set_caption("Scores")
# %%
pd.set_option("display.max_rows", 4)
pd.DataFrame({"n": range(10)})
# %%
pd.reset_option("display.max_rows")
pd.set_option("display.precision", 2)
scores / 3
# %%
display(scores.style.background_gradient(cmap="Blues"))
# %%
print(scores.to_string())
# %%
scores.T
'''

NOTEBOOKS["12-matplotlib-inline"] = r'''
# %% [markdown]
# # Plotting in the notebook
# %%
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
# %%
x = np.linspace(0, 2 * np.pi, 50)
plt.plot(x, np.sin(x))
# %%
plt.plot(x, np.cos(x));
# %%
fig, ax = plt.subplots(1, 2, figsize=(6, 2.5))
ax[0].bar(["a", "b", "c"], [3, 1, 2])
ax[1].scatter(x, np.sin(x) * x)
fig.suptitle("Two panels")
# %%
plt.hist(np.random.default_rng(1).normal(size=200), bins=15)
plt.title("Histogram")
plt.show()
# %%
fig
# %%
plt.figure()
plt.close()
# %%
print(plt.get_backend())
# %%
axis = plt.gca()
axis.plot([1, 2, 3])
axis.set_xlabel("step")
'''

NOTEBOOKS["13-matplotlib-plain"] = r'''
# %% [markdown]
# Plain pyplot, no magic: figures still show at the end of each cell.
# %%
import matplotlib
import matplotlib.pyplot as plt
# %%
plt.plot([1, 4, 9, 16])
plt.ylabel("squares")
# %%
fig = plt.figure(figsize=(3, 2))
plt.plot([3, 1, 2], "o-")
fig.savefig("line.png", dpi=50)
with open("line.png", "rb") as fh:
    print(fh.read(8))
# %%
import os
os.path.getsize("line.png") > 0
# %%
fig, axes = plt.subplots(2, 2)
for i, a in enumerate(axes.flat):
    a.set_title(f"panel {i}")
plt.tight_layout()
# %%
plt.close("all")
len(plt.get_fignums())
# %%
plt.plot([0, 1], [0, 1], label="diagonal")
plt.legend()
plt.show()
# %%
matplotlib.get_backend()
'''

NOTEBOOKS["14-pandas-plotting"] = r'''
# %%
%matplotlib inline
%config InlineBackend.figure_format = 'retina'
import numpy as np
import pandas as pd
# %%
frame = pd.DataFrame({"a": np.arange(10), "b": np.arange(10) ** 1.5})
frame.plot()
# %%
frame.plot(kind="bar", y="b", legend=False);
# %%
frame["b"].hist(bins=5)
# %%
ax = frame.plot.scatter(x="a", y="b")
ax.get_xlabel()
# %%
frame.plot(subplots=True, figsize=(5, 3));
# %%
%config InlineBackend.figure_format = 'png'
frame.boxplot()
'''

NOTEBOOKS["15-magics-who"] = r'''
# %%
alpha = 1
beta = "two"
gamma = [3]
import os

def delta():
    pass
# %%
%who
# %%
%who str
# %%
%whos
# %%
names = %who_ls
names
# %%
%xdel gamma
%who
# %%
%reset -f
%who
# %%
"alpha" in dir()
'''

NOTEBOOKS["16-magics-misc"] = r'''
# %%
import math
%precision 3
# %%
math.pi
# %%
[math.e, 1 / 3]
# %%
%precision
math.pi
# %%
%env NOTEBOOK_MODE=differential
# %%
%env NOTEBOOK_MODE
# %%
import os
os.environ["NOTEBOOK_MODE"]
# %%
%pwd
# %%
%config Completer.use_jedi = False
# %%
%xmode Minimal
# %%
1 / 0
# %%
%xmode Context
'''

NOTEBOOKS["17-timing"] = r'''
# %% [markdown]
# # Timing code
# %%
import time
# %%
%time sum(range(10000))
# %%
%timeit -n1 -r1 sorted(range(1000))
# %%
%%time
total = 0
for i in range(5000):
    total += i
total
# %%
%%timeit -n1 -r1
[i * i for i in range(100)]
# %%
result = %timeit -o -q -n1 -r1 time.sleep(0.001)
type(result).__name__, result.loops, result.repeat
# %%
%time time.sleep(0.01)
# %%
start = time.perf_counter()
time.sleep(0.01)
time.perf_counter() - start >= 0.01
# %%
%time squares = [n * n for n in range(1000)]
len(squares)
'''

NOTEBOOKS["18-output-history"] = r'''
# %% [markdown]
# # Input and output history
# %%
import math
# %%
math.sin(2)
# %%
math.cos(2)
# %%
print(In[1])
print(Out[2])
# %%
Out[2] ** 2 + Out[3] ** 2
# %%
print(_)
print(__)
print(___)
# %%
_2, _i2
# %%
math.sin(2) + math.cos(2);
# %%
8 in Out, _i
# %%
%history -n 1-4
# %%
sorted(Out)[:3]
# %%
_ih[3], _oh[3]
'''

NOTEBOOKS["19-script-magics"] = r'''
# %% [markdown]
# # Running scripts from cells
# %%
%%bash
echo "hello from bash"
for i in 1 2 3; do echo "line $i"; done
# %%
%%sh
echo "sh says hi"
echo "to stderr" >&2
# %%
%%script bash
printf '%s\n' alpha beta
# %%
%%script python3
import sys
print("python", sys.version_info[0])
# %%
%%bash --out captured
echo "kept for later"
# %%
captured
# %%
%%bash --err errors
echo "oops" >&2
# %%
errors
# %%
%%bash
echo "about to fail"
exit 3
# %%
print("after the failing script")
'''

NOTEBOOKS["20-display-magics"] = r'''
# %%
%%html
<table><tr><th>key</th><th>value</th></tr><tr><td>a</td><td>1</td></tr></table>
# %%
%%javascript
console.log("hello from a cell");
# %%
%%js
element.textContent = "set by js";
# %%
%%latex
\begin{align}
a &= b + c \\
d &= e
\end{align}
# %%
%%markdown
# Title
Some *emphasis* and a list:
- one
- two
# %%
%%svg
<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40">
  <circle cx="20" cy="20" r="15" fill="teal"/>
</svg>
# %%
%%html --isolated
<p>isolated paragraph</p>
# %%
print("plain text after the rich cells")
'''

NOTEBOOKS["21-capturing-output"] = r'''
# %% [markdown]
# # Capturing output
# %%
%%capture cap
import sys
print("captured line")
print("captured err", file=sys.stderr)
# %%
cap.stdout
# %%
cap.stderr
# %%
cap.show()
# %%
%%capture rich
from IPython.display import HTML, display
display(HTML("<b>bold</b>"))
print("text")
# %%
len(rich.outputs), sorted(rich.outputs[0].data)
# %%
rich()
# %%
%%capture --no-stdout
print("this is shown")
print("this is not", file=sys.stderr)
# %%
from IPython.utils.capture import capture_output
with capture_output() as captured:
    print("inside")
captured.stdout.upper()
'''

NOTEBOOKS["22-writefile-and-run"] = r'''
# %%
%%writefile helper.py
def greet(name):
    return f"hello, {name}"

if __name__ == "__main__":
    print(greet("script"))
# %%
%run helper.py
# %%
greet("notebook")
# %%
import helper
helper.greet("module")
# %%
%%writefile -a helper.py

ANSWER = 42
# %%
%pycat helper.py
# %%
import importlib
importlib.reload(helper).ANSWER
# %%
%%writefile data.csv
city,temp
Lisbon,21
Oslo,9
# %%
import pandas as pd
pd.read_csv("data.csv")
# %%
%load helper.py
'''

NOTEBOOKS["23-files-written"] = r'''
# %% [markdown]
# Files written beside the notebook, then read back.
# %%
import csv
import os
import pathlib
# %%
rows = [("name", "score"), ("ada", 91), ("bob", 78)]
with open("scores.csv", "w", newline="") as fh:
    csv.writer(fh).writerows(rows)
os.path.exists("scores.csv")
# %%
with open("scores.csv") as fh:
    print(fh.read())
# %%
with open("scores.csv", newline="") as fh:
    records = list(csv.DictReader(fh))
records
# %%
notes = pathlib.Path("notes")
notes.mkdir(exist_ok=True)
(notes / "a.txt").write_text("first\n")
# %%
sorted(p.name for p in notes.iterdir()), (notes / "a.txt").read_text()
# %%
import pandas as pd
pd.read_csv("scores.csv").score.mean()
# %%
os.remove("scores.csv")
os.path.exists("scores.csv")
# %%
open("scores.csv")
# %%
import json
with open("out.json", "w") as fh:
    json.dump({"k": [1, 2]}, fh)
with open("out.json") as fh:
    loaded = json.load(fh)
loaded
'''

NOTEBOOKS["24-files-shipped"] = r'''
# %% [markdown]
# Reads the data files shipped with the project (`../data`).
# %%
import pandas as pd
# %%
readings = pd.read_csv("../data/measurements.csv", parse_dates=["day"])
readings
# %%
readings.groupby("station")["value"].agg(["count", "mean"])
# %%
!ls ../data
# %%
!head -n 3 ../data/measurements.csv
# %%
with open("../data/notes.txt", encoding="utf-8") as fh:
    notes = fh.read().splitlines()
notes
# %%
from IPython.display import FileLink
FileLink("../data/measurements.csv")
# %%
len(readings), readings.value.sum()
# %%
%cat ../data/notes.txt
'''

NOTEBOOKS["25-shell-escapes"] = r'''
# %% [markdown]
# # Shell commands
# %%
!echo hello from the shell
# %%
files = !ls ../data
files
# %%
type(files).__name__, files.s
# %%
name = "notebook"
!echo {name.upper()}
# %%
!echo $name
# %%
!pwd
# %%
count = !ls ../data | wc -l
int(count[0])
# %%
!ls nonexistent-folder
# %%
!exit 3
# %%
%sx echo via sx
# %%
lines = !printf "a 1\nb 2\nc 3\n"
lines.grep("b"), lines.fields(1)
'''

NOTEBOOKS["26-help"] = r'''
# %% [markdown]
# # Help and documentation
# %%
def area(radius: float) -> float:
    """Area of a circle of the given radius."""
    return 3.14159 * radius ** 2
# %%
area?
# %%
area??
# %%
?area
# %%
len?
# %%
%pinfo sorted
# %%
import json
json.dumps?
# %%
data = [1, 2, 3]
data?
# %%
data.append?
# %%
%pdoc area
# %%
area(2)
'''

NOTEBOOKS["27-display-basics"] = r'''
# %%
display("a string", 42, [1, 2])
# %%
print("before")
display({"key": "value"})
print("after")
# %%
from IPython.display import HTML, display
h = HTML("<em>hi</em>")
display(h, exclude=["text/html"])
# %%
display(h, include=["text/html"])
# %%
display({"text/plain": "plain version", "text/html": "<b>html version</b>"}, raw=True)
# %%
display(h, metadata={"isolated": True})
# %%
returned = display(3)
print(returned)
# %%
import pandas as pd
frame = pd.DataFrame({"a": [1, 2]})
display(frame)
display(frame.a)
# %%
for i in range(3):
    display(i)
# %%
display()
# %%
display(h)
h
'''

NOTEBOOKS["28-display-ids"] = r'''
# %% [markdown]
# Displays updated in place by id.
# %%
from IPython.display import HTML, display, update_display
# %%
display("initial text", display_id="status")
# %%
update_display("updated text", display_id="status")
# %%
handle = display(HTML("<b>step 0</b>"), display_id=True)
for step in range(1, 4):
    handle.update(HTML(f"<b>step {step}</b>"))
# %%
handle.display(HTML("<i>shown again</i>"))
# %%
handle.update("final")
# %%
display(1, display_id="number")
display(2, display_id="number")
# %%
update_display(3, display_id="number")
# %%
type(handle).__name__
'''

NOTEBOOKS["29-clear-output"] = r'''
# %%
import time
from IPython.display import clear_output, display
# %%
print("this will vanish")
clear_output()
print("kept")
# %%
for i in range(4):
    clear_output(wait=True)
    print(f"progress {i}/3")
# %%
display("first")
clear_output(wait=True)
display("second")
# %%
print("stays, nothing follows the clear")
clear_output(wait=True)
# %%
for i in range(3):
    time.sleep(0.01)
    print(i, end=" ", flush=True)
print()
# %%
clear_output()
"result after clear"
'''

NOTEBOOKS["30-display-classes"] = r'''
# %% [markdown]
# # Rich output classes
# %%
from IPython.display import (HTML, JSON, SVG, Code, Javascript, Latex, Markdown, Math, Pretty,
                             display)
# %%
Markdown("## Heading\n\n* item **bold**")
# %%
Latex(r"$\int_0^1 x^2\,dx = \frac{1}{3}$")
# %%
Math(r"e^{i\pi} + 1 = 0")
# %%
JSON({"name": "corpus", "items": [1, 2, 3], "nested": {"ok": True}})
# %%
Pretty("pretty text\nacross lines")
# %%
Code("def f(x):\n    return x * 2\n", language="python")
# %%
Javascript("console.log('hi')")
# %%
SVG('<svg xmlns="http://www.w3.org/2000/svg" width="30" height="30">'
    '<rect width="30" height="30" fill="orange"/></svg>')
# %%
display(HTML("<ul><li>one</li></ul>"), Markdown("*two*"))
# %%
HTML("<p>last</p>")._repr_html_()
'''

NOTEBOOKS["31-display-images"] = r'''
# %%
import struct
import zlib

def make_png(width, height, rgb):
    """A tiny solid-colour PNG, built with the standard library."""
    def chunk(tag, body):
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))

red = make_png(4, 3, (255, 0, 0))
red[:8], len(red)
# %%
from IPython.display import Image, display, display_png
Image(data=red)
# %%
Image(data=red, width=40)
# %%
display_png(red, raw=True)
# %%
with open("tile.png", "wb") as fh:
    fh.write(red)
Image(filename="tile.png")
# %%
img = Image(data=red, height=10)
img.format, img.height, len(img.data)
# %%
display(Image(data=red), Image(data=make_png(2, 2, (0, 0, 255))))
# %%
Image(filename="missing.png")
'''

NOTEBOOKS["32-repr-methods"] = r'''
# %% [markdown]
# # Custom display logic with `_repr_*_`
# %%
class Temperature:
    def __init__(self, celsius):
        self.celsius = celsius

    def __repr__(self):
        return f"Temperature({self.celsius})"

    def _repr_html_(self):
        return f"<b>{self.celsius} &deg;C</b>"

    def _repr_latex_(self):
        return f"${self.celsius}^\\circ C$"

Temperature(21)
# %%
class Badge:
    def _repr_svg_(self):
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'

    def _repr_markdown_(self):
        return "**badge**"

Badge()
# %%
class Record:
    def __repr__(self):
        return "Record(1)"

    def _repr_json_(self):
        return {"id": 1, "tags": ["a"]}

Record()
# %%
class Nothing:
    def __repr__(self):
        return "Nothing()"

    def _repr_html_(self):
        return None

Nothing()
# %%
import base64
DOT = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AA"
                       "AAMBAQDJ/pLvAAAAAElFTkSuQmCC")

class Pixel:
    def __repr__(self):
        return "Pixel()"

    def _repr_png_(self):
        return DOT

Pixel()
# %%
class Tree:
    def __init__(self, *kids):
        self.kids = kids

    def _repr_pretty_(self, p, cycle):
        with p.group(5, "Tree(", ")"):
            for i, kid in enumerate(self.kids):
                if i:
                    p.text(",")
                    p.breakable()
                p.pretty(kid)

Tree(1, Tree(2, 3), [4, 5])
# %%
print(Temperature(5))
# %%
display(Temperature(30), Record())
# %%
[Temperature(1), Temperature(2)]
# %%
class Broken:
    def __repr__(self):
        return "Broken()"

    def _repr_html_(self):
        raise ValueError("no html for you")

Broken()
'''

NOTEBOOKS["33-repr-mimebundle"] = r'''
# %%
class Chart:
    def __init__(self, values):
        self.values = values

    def _repr_mimebundle_(self, include=None, exclude=None):
        bars = "".join(f"<span>{'#' * v}</span>" for v in self.values)
        return {
            "text/plain": f"Chart{self.values}",
            "text/html": f"<div>{bars}</div>",
            "application/vnd.example.chart+json": {"values": self.values},
        }

Chart([1, 2, 3])
# %%
display(Chart([4]), exclude=["text/html"])
# %%
class WithMetadata:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": "with metadata", "text/markdown": "*md*"}, {"text/markdown": {"n": 1}}

WithMetadata()
# %%
class Both:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": "from the bundle"}

    def _repr_html_(self):
        return "<p>from the method</p>"

Both()
# %%
ip = get_ipython()
html = ip.display_formatter.formatters["text/html"]
html.for_type(complex, lambda z: f"<code>{z.real} + {z.imag}i</code>")
3 + 4j
# %%
html.pop(complex)
3 + 4j
# %%
from fractions import Fraction
latex = ip.display_formatter.formatters["text/latex"]
latex.for_type_by_name("fractions", "Fraction",
                       lambda f: f"$\\frac{{{f.numerator}}}{{{f.denominator}}}$")
Fraction(3, 4)
# %%
plain = ip.display_formatter.formatters["text/plain"]
plain.for_type(float, lambda x, p, cycle: p.text(f"{x:.2f}!"))
2 / 3
# %%
Chart([])
'''

NOTEBOOKS["34-pretty-printing"] = r'''
# %%
list(range(40))
# %%
{"alpha": list(range(10)), "beta": {"nested": [1, 2, {"deep": "value" * 5}]}, "gamma": "x" * 60}
# %%
from collections import Counter, OrderedDict, defaultdict, deque, namedtuple
Counter("mississippi")
# %%
groups = defaultdict(list)
groups["a"].append(1)
groups
# %%
Point = namedtuple("Point", "x y")
Point(1, 2), deque([1, 2, 3], maxlen=5)
# %%
from dataclasses import dataclass

@dataclass
class Item:
    name: str
    qty: int = 0

Item("bolt", 5)
# %%
frozenset({3, 1, 2}), {5, 4, 6}
# %%
"a\nmultiline\nstring"
# %%
print("a\nmultiline\nstring")
# %%
(1,), (), [[]], {}, b"bytes", 1e-10, 10 ** 30, 1.0 / 3
# %%
range(5), int, len, print
# %%
OrderedDict(a=1, b=2)
'''

NOTEBOOKS["35-pasted-prompts"] = r'''
# %% [markdown]
# Code pasted from a Python console or an IPython session, prompts included.
# %%
>>> x = 6
>>> y = 7
>>> x * y
# %%
>>> for i in range(3):
...     print(i)
...
# %%
In [1]: import math

In [2]: math.floor(2.7)
# %%
In [3]: def twice(v):
   ...:     return v * 2
   ...:

In [4]: twice(21)
# %%
>>> print("pasted with its output")
pasted with its output
# %%
x, y
# %%
>>> import statistics
>>> statistics.mean([1, 2, 3, 4])
# %%
In [10]: [c.upper() for c in "abc"]
'''

NOTEBOOKS["36-get-ipython"] = r'''
# %%
ip = get_ipython()
type(ip).__name__
# %%
from IPython import get_ipython as lookup
lookup() is ip
# %%
ip.run_line_magic("precision", "2")
1 / 7
# %%
ip.run_cell_magic("capture", "out", "print('hidden')")
out.stdout
# %%
ip.user_ns["injected"] = 99
injected
# %%
ip.ev("injected + 1")
# %%
ip.system("echo via system")
# %%
ip.getoutput("echo via getoutput")
# %%
def announce(result):
    print("after the cell, success:", result.success)

ip.events.register("post_run_cell", announce)
# %%
1 + 1
# %%
ip.events.unregister("post_run_cell", announce)
"unregistered"
# %%
"IPKernelApp" in ip.config, hasattr(ip, "kernel")
# %%
"timeit" in ip.magics_manager.magics["line"]
'''

NOTEBOOKS["37-stdin"] = r'''
# %% [markdown]
# Asking for input when the frontend sends none (stdin is off).
# %%
name = "fallback"
# %%
name = input("Your name: ")
# %%
name
# %%
import getpass
secret = getpass.getpass("Password: ")
# %%
print("still alive")
# %%
try:
    answer = input("Continue? ")
except Exception as err:
    answer = type(err).__name__
answer
# %%
len(name)
'''

NOTEBOOKS["38-comms"] = r'''
# %% [markdown]
# Comms opened by the kernel side, with no frontend listening.
# %%
import comm
# %%
channel = comm.create_comm(target_name="differential.demo", data={"hello": 1})
type(channel).__name__
# %%
channel.send({"step": 1})
channel.target_name
# %%
received = []
channel.on_msg(received.append)
received
# %%
channel.close()
"closed"
# %%
manager = comm.get_comm_manager()
type(manager).__name__
# %%
second = comm.create_comm(target_name="differential.second")
len(second.comm_id)
# %%
second.close()
'''

NOTEBOOKS["39-warnings-and-stderr"] = r'''
# %%
import logging
import sys
import warnings
# %%
warnings.warn("this is a user warning")
# %%
warnings.warn("old api", DeprecationWarning)
# %%
import numpy as np
np.array([1.0, 0.0]) / 0
# %%
print("to stdout")
print("to stderr", file=sys.stderr)
# %%
sys.stderr.write("written directly\n")
# %%
logging.warning("a logged warning")
# %%
import pandas as pd
pd.Series([1, 2]).append(pd.Series([3]))
# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    warnings.warn("recorded")
[str(w.message) for w in caught]
# %%
warnings.simplefilter("ignore")
warnings.warn("hidden")
"nothing shown"
'''

NOTEBOOKS["40-unicode"] = r'''
# %%
greeting = "Olá, мир, 世界 👋"
print(greeting)
# %%
greeting
# %%
len(greeting), greeting.encode("utf-8")[:12]
# %%
π = 3.14159
rayon = 2
π * rayon ** 2
# %%
import unicodedata
[unicodedata.name(c) for c in "é€😀"]
# %%
"straße".upper(), "ǅ".lower()
# %%
import pandas as pd
pd.DataFrame({"città": ["Zürich", "Kraków"], "größe": [1.5, 2.25]})
# %%
print("café" == "cafe\u0301", unicodedata.normalize("NFC", "cafe\u0301") == "café")
# %%
raise ValueError("ungültige Eingabe: ✗")
# %%
print("tab\tand\u00a0nbsp", "→", sep=" | ")
'''

NOTEBOOKS["41-analysis-workflow"] = r'''
# %% [markdown]
# # A small analysis, start to end
# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
%matplotlib inline
pd.set_option("display.precision", 3)
# %%
rng = np.random.default_rng(7)
n = 120
df = pd.DataFrame({"group": rng.choice(["a", "b", "c"], n),
                   "x": rng.normal(0, 1, n), "y": rng.normal(5, 2, n)})
df.head()
# %%
df.describe()
# %%
df.isna().sum()
# %%
summary = df.groupby("group").agg(mean_x=("x", "mean"), mean_y=("y", "mean"), n=("x", "size"))
summary
# %%
df["z"] = df.x * 2 + df.y
df.corr(numeric_only=True)
# %%
fig, ax = plt.subplots(figsize=(4, 3))
for name, part in df.groupby("group"):
    ax.scatter(part.x, part.y, label=name, s=10)
ax.legend()
ax.set_title("x against y")
# %%
summary.plot.bar(y="n", legend=False)
plt.tight_layout()
# %%
display(summary.style.format("{:.2f}", subset=["mean_x", "mean_y"]))
# %%
print(f"rows: {len(df)}, groups: {df.group.nunique()}")
'''

NOTEBOOKS["42-extensions-autoreload"] = r'''
# %%
%load_ext autoreload
%autoreload 2
# %%
%%writefile shapes.py
def describe():
    return "version one"
# %%
import shapes
shapes.describe()
# %%
with open("shapes.py", "w") as fh:
    fh.write('def describe():\n    return "version two, a longer one"\n')
# %%
shapes.describe()
# %%
%reload_ext autoreload
# %%
%load_ext not_an_extension
# %%
%autoreload 0
"autoreload off"
'''

NOTEBOOKS["43-cleaning-data"] = r'''
# %%
import numpy as np
import pandas as pd
# %%
raw = pd.DataFrame({"name": [" Ann ", "bob", None, "CLEO"], "age": ["31", "n/a", "27", "45"],
                    "joined": ["2021-03-01", "2020-11-15", "2022-01-09", None]})
raw
# %%
clean = raw.assign(name=raw.name.str.strip().str.title(),
                   age=pd.to_numeric(raw.age, errors="coerce"),
                   joined=pd.to_datetime(raw.joined))
clean
# %%
clean.dtypes
# %%
clean.dropna(subset=["name"]).age.fillna(clean.age.median())
# %%
pd.cut(clean.age, bins=[0, 30, 40, 100], labels=["young", "mid", "senior"])
# %%
clean["decade"] = (clean.age // 10 * 10).astype("Int64")
clean
# %%
clean.name.map(lambda s: s[0] if isinstance(s, str) else "?").tolist()
# %%
clean.info()
# %%
int(np.isnan(clean.age).sum())
'''

NOTEBOOKS["44-top-level-await"] = r'''
# %%
import asyncio
# %%
await asyncio.sleep(0.01)
"slept"
# %%
async def square_later(i):
    await asyncio.sleep(0.001 * i)
    return i * i

await asyncio.gather(*(square_later(i) for i in range(5)))
# %%
results = [await square_later(i) for i in range(3)]
results
# %%
async def boom():
    raise RuntimeError("async failure")

await boom()
# %%
%autoawait
# %%
async def numbers():
    for i in range(3):
        yield i

[v async for v in numbers()]
'''

NOTEBOOKS["45-printing"] = r'''
# %%
import sys
import time
# %%
for i in range(5):
    print(i, end=" ")
# %%
print("a", "b", sep="-", end="!\n")
print()
# %%
for pct in (0, 50, 100):
    print(f"\rprogress {pct}%", end="", flush=True)
    time.sleep(0.01)
print()
# %%
sys.stdout.write("no newline")
sys.stdout.flush()
# %%
print("x" * 200)
# %%
print("\n".join(f"row {i}" for i in range(30)))
# %%
print("\x1b[31mred text\x1b[0m")
# %%
print(b"bytes object")
print(repr("quote's"))
# %%
import pprint
pprint.pprint({f"k{i}": list(range(i)) for i in range(6)})
'''

NOTEBOOKS["46-introspection"] = r'''
# %%
def scale(v, factor=2):
    """Multiply v by factor."""
    return v * factor
# %%
help(scale)
# %%
import inspect
inspect.signature(scale)
# %%
print(inspect.getsource(scale))
# %%
scale.__doc__, scale.__module__, __name__
# %%
"__file__" in globals()
# %%
[n for n in dir(scale) if not n.startswith("_")]
# %%
import os.path
os.path.join.__module__
# %%
type(scale).__mro__
# %%
vars(type("K", (), {"a": 1}))["a"]
'''

NOTEBOOKS["47-text-processing"] = r'''
# %% [markdown]
# # Counting words
# %%
import re
import textwrap
from collections import Counter
# %%
text = """The quick brown fox jumps over the lazy dog. The dog sleeps;
the fox runs on, quick and quiet, over the hill."""
words = re.findall(r"[a-z]+", text.lower())
len(words)
# %%
Counter(words).most_common(4)
# %%
print(textwrap.fill(text, width=30))
# %%
re.sub(r"\b(\w)(\w*)", lambda m: m[1].upper() + m[2], "title case these words")
# %%
pattern = re.compile(r"(?P<key>\w+)=(?P<value>\d+)")
[m.groupdict() for m in pattern.finditer("a=1, b=22, c=333")]
# %%
"{:>10}|{:^10}|{:<10}".format("right", "centre", "left")
# %%
f"{1234567.891:,.2f}", f"{0.25:.1%}", f"{42:08b}"
# %%
sorted(set(words), key=lambda w: (-len(w), w))[:5]
'''

NOTEBOOKS["48-dates-and-numbers"] = r'''
# %%
import datetime as dt
import json
from decimal import Decimal
from fractions import Fraction
# %%
start = dt.date(2024, 2, 27)
[start + dt.timedelta(days=i) for i in range(4)]
# %%
dt.datetime(2024, 5, 1, 13, 30).strftime("%A %d %B %Y, %H:%M")
# %%
dt.datetime.fromisoformat("2024-05-01T08:15:00+02:00")
# %%
Decimal("0.1") + Decimal("0.2"), 0.1 + 0.2
# %%
Fraction(3, 4) + Fraction(1, 6)
# %%
print(json.dumps({"when": start.isoformat(), "amount": str(Decimal("9.99")), "n": [1, 2]},
                 indent=2))
# %%
json.dumps(start)
# %%
divmod(17, 5), 2 ** 100, round(2.675, 2)
'''

NOTEBOOKS["49-numpy-statistics"] = r'''
# %%
import numpy as np
rng = np.random.default_rng(123)
heights = rng.normal(170, 8, size=500).round(1)
heights[:6]
# %%
heights.mean().round(2), heights.std().round(2), np.median(heights)
# %%
np.percentile(heights, [5, 25, 50, 75, 95])
# %%
counts, edges = np.histogram(heights, bins=5)
counts, edges.round(1)
# %%
x = np.arange(10)
y = 3 * x + 2 + rng.normal(0, 0.1, 10)
np.polyfit(x, y, 1).round(2)
# %%
np.cumsum(np.arange(1, 6)), np.diff([1, 4, 9, 16])
# %%
np.corrcoef(x, y).round(4)
# %%
np.unique(rng.integers(0, 4, size=30), return_counts=True)
'''

NOTEBOOKS["50-classes-and-generators"] = r'''
# %%
class Account:
    def __init__(self, owner, balance=0):
        self.owner = owner
        self._balance = balance

    @property
    def balance(self):
        return self._balance

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("deposit must be positive")
        self._balance += amount
        return self

    def __str__(self):
        return f"{self.owner}: {self._balance}"

acct = Account("ada").deposit(50).deposit(25)
print(acct)
acct.balance
# %%
acct.deposit(-5)
# %%
acct.balance = 10
# %%
def fibonacci():
    a, b = 0, 1
    while True:
        yield a
        a, b = b, a + b

import itertools
list(itertools.islice(fibonacci(), 10))
# %%
from contextlib import contextmanager

@contextmanager
def section(title):
    print(f"[{title}]")
    yield title.upper()
    print(f"[/{title}]")

with section("work") as label:
    print("inside", label)
# %%
from functools import lru_cache

@lru_cache(maxsize=None)
def ways(n):
    return 1 if n < 2 else ways(n - 1) + ways(n - 2)

ways(60), ways.cache_info().hits
# %%
sorted([("b", 2), ("a", 2), ("c", 1)], key=lambda kv: (kv[1], kv[0]))
# %%
gen = (i * i for i in range(3))
next(gen), next(gen), next(gen)
# %%
next(gen)
'''

NOTEBOOKS["51-results-beside-notebook"] = r"""
# %% [markdown]
# # Station summary
# A helper module written from the notebook, results saved next to it, then tidied up.
# %%
%%writefile features.py
'''Feature helpers for the rain gauge readings.'''


def wet_days(frame, threshold=1.0):
    return frame[frame["value"] >= threshold]


def summary(frame):
    return frame.groupby("station")["value"].agg(["count", "sum", "max"])
# %%
import os
import pandas as pd
import features

readings = pd.read_csv("../data/measurements.csv", parse_dates=["day"])
features.wet_days(readings)
# %%
os.makedirs("results", exist_ok=True)
summary = features.summary(readings)
summary.to_csv("results/summary.csv")
sorted(os.listdir("results"))
# %%
pd.read_csv("results/summary.csv", index_col="station")
# %%
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
summary["sum"].plot.bar(ax=ax, title="Rain per station (mm)")
fig.savefig("results/totals.png", dpi=60)
plt.close(fig)
os.path.getsize("results/totals.png") > 1000
# %%
with open("results/run.log", "a") as log:
    log.write(f"loaded {len(readings)} readings\n")
with open("results/run.log", "a") as log:
    log.write(f"saved a summary of {len(summary)} stations\n")
print(open("results/run.log").read())
# %%
import pickle
model = {"threshold": 1.0, "stations": sorted(readings.station.unique())}
with open("results/model.pkl", "wb") as fh:
    pickle.dump(model, fh)
with open("results/model.pkl", "rb") as fh:
    restored = pickle.load(fh)
restored == model, restored["stations"]
# %%
import shutil
os.remove("results/run.log")
shutil.copy("results/summary.csv", "summary-backup.csv")
sorted(os.listdir("results")), os.path.exists("summary-backup.csv")
# %%
from pathlib import Path
Path("summary-backup.csv").rename("summary-final.csv")
sorted(p.name for p in Path(".").glob("*.csv"))
# %%
shutil.rmtree("results")
Path("features.py").unlink()
os.path.exists("results"), os.path.exists("features.py"), Path("summary-final.csv").stat().st_size
# %%
open("results/summary.csv")
# %%
Path.cwd().name, Path.cwd().parent.joinpath("data").is_dir(), os.getcwd() == str(Path.cwd())
"""

NOTEBOOKS["52-project-data"] = r"""
# %% [markdown]
# # Exploring the raw readings
# The data lives in the project's `data/` folder, pictures in `images/`, helpers in `src/`.
# %%
from pathlib import Path
import pandas as pd

DATA = Path("..") / "data"
sorted(p.name for p in DATA.iterdir())
# %%
raw = pd.read_csv(DATA / "measurements.csv")
raw.head(3)
# %%
import glob
glob.glob("../data/*.csv"), glob.glob("../images/*.png")
# %%
print(Path("../data/notes.txt").read_text(encoding="utf-8"))
# %%
from IPython.display import Image, display
Image(filename="../images/logo.png")
# %%
display(Image("../images/pipeline.png", width=240))
# %%
import sys
sys.path.append("..")
from src.cleaning import daily_totals, load_measurements
daily_totals(load_measurements())
# %%
processed = DATA / "processed"
processed.mkdir(exist_ok=True)
daily_totals(load_measurements()).to_csv(processed / "daily.csv")
sorted(p.name for p in processed.iterdir())
# %%
pd.read_csv("../data/processed/daily.csv").shape
# %%
import os
os.path.relpath(os.path.abspath("../data/notes.txt")), os.path.isfile("../README.md")
# %%
!ls ../images ../data
# %%
Image(filename="../images/missing.png")
"""

NOTEBOOKS["53-kernel-object"] = r"""
# %% [markdown]
# # Publishing through the kernel object
# Libraries reach ipykernel's kernel through `get_ipython().kernel` and send messages on its
# iopub socket themselves.
# %%
kernel = get_ipython().kernel
kernel is not None, hasattr(kernel, "session"), hasattr(kernel, "iopub_socket")
# %%
def in_notebook():
    try:
        return "IPKernelApp" in get_ipython().config
    except NameError:
        return False

in_notebook()
# %%
kernel.session.send(
    kernel.iopub_socket,
    "display_data",
    {"data": {"text/plain": "sent through the kernel",
              "text/html": "<b>sent</b> through the kernel"},
     "metadata": {}},
    parent=kernel.get_parent(),
);
# %%
kernel.session.send(kernel.iopub_socket, "stream",
                    {"name": "stdout", "text": "a line sent as a stream\n"},
                    parent=kernel.get_parent("shell"));
# %%
parent = kernel.get_parent()
parent["header"]["msg_type"], parent["content"]["code"].startswith("parent =")
# %%
from IPython.display import display
handle = display("first", display_id=True)
kernel.session.send(
    kernel.iopub_socket,
    "update_display_data",
    {"data": {"text/plain": "'updated through the kernel'"}, "metadata": {},
     "transient": {"display_id": handle.display_id}},
    parent=kernel.get_parent(),
);
# %%
kernel.shell is get_ipython(), hasattr(kernel, "comm_manager")
# %%
def publish_table(rows):
    html = "<table>" + "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows) + "</table>"
    text = "\n".join(f"{a}\t{b}" for a, b in rows)
    k = get_ipython().kernel
    k.session.send(k.iopub_socket, "display_data",
                   {"data": {"text/html": html, "text/plain": text}, "metadata": {}},
                   parent=k.get_parent())

publish_table([("north", 19.75), ("south", 3.0)])
# %%
print("after the messages")
"""

# Logging flushes every record, so ipykernel sends each as its own iopub message and drops
# those past its IOPub high-water mark (1000): the reference kernel itself loses lines of a
# 5000-record log. The logging cell stays under that; the print floods are batched.
NOTEBOOKS["54-printing-floods"] = r"""
# %% [markdown]
# # Long outputs
# Training loops, logs and dumps that print a lot; the notebook goes on afterwards.
# %%
for step in range(100_000):
    print(f"step {step:>6} loss {1 / (step + 1):.6f}")
# %%
print("x" * 5_000_000)
# %%
import sys
for i in range(20_000):
    print(f"warning {i}: value clipped", file=sys.stderr)
# %%
import logging
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s", force=True)
log = logging.getLogger("train")
for epoch in range(500):
    log.info("epoch %d done", epoch)
# %%
for i in range(3_000):
    print(f"\rprogress {i + 1}/3000", end="")
print()
# %%
import numpy as np
np.set_printoptions(threshold=sys.maxsize)
print(np.arange(100_000).reshape(-1, 10))
# %%
import pandas as pd
frame = pd.DataFrame({"n": range(20_000), "square": [n * n for n in range(20_000)]})
print(frame.to_string())
# %%
for i in range(50_000):
    print(i, end=" ")
# %%
print("still here")
6 * 7
"""

NOTEBOOKS["55-distro-python"] = r"""
# %% [markdown]
# # Checking the environment
# The cells a notebook runs to see which Python and libraries it got.
# %%
import sys
sys.version_info[:2], sys.version_info.major
# %%
import matplotlib
import numpy as np
import pandas as pd
np.__version__, pd.__version__, matplotlib.__version__
# %%
pd.__file__.endswith("pandas/__init__.py"), np.get_include().endswith("include")
# %%
import importlib.util
[name for name in ("numpy", "pandas", "matplotlib", "seaborn", "sklearn")
 if importlib.util.find_spec(name)]
# %%
try:
    import seaborn as sns
except ImportError:
    sns = None
    print("seaborn is not installed: plain matplotlib then")
# %%
import matplotlib.pyplot as plt
matplotlib.get_backend()
# %%
from pathlib import Path
from matplotlib import font_manager
Path(font_manager.findfont("DejaVu Sans")).name
# %%
import locale
locale.getpreferredencoding(False), sys.getfilesystemencoding()
# %%
df = pd.DataFrame({"x": np.linspace(0, 1, 5), "y": np.linspace(0, 1, 5) ** 2})
df.describe()
# %%
ax = df.plot(x="x", y="y", figsize=(3, 2), title="y = x squared")
# %%
import sqlite3
con = sqlite3.connect(":memory:")
df.to_sql("points", con, index=False)
pd.read_sql("SELECT COUNT(*) AS n, MAX(y) AS top FROM points", con)
# %%
import platform
platform.system(), platform.machine(), platform.python_implementation()
"""


def cells_of(text: str) -> list:
    """The cells of one notebook written in the percent format."""
    cells, kind, lines = [], None, []

    def close() -> None:
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                             for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code":
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line in ("# %%", "# %% [markdown]"):
            close()
            kind, lines = ("markdown" if line.endswith("]") else "code"), []
        else:
            lines.append(line)
    close()
    return cells


def notebook(name: str, text: str) -> nbformat.NotebookNode:
    """A v4 notebook with stable cell ids (so regenerating changes nothing)."""
    cells = cells_of(text)
    for i, cell in enumerate(cells):
        cell.id = f"{name[:2]}-{i:02d}"
    return nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": KERNELSPEC, "language_info": {"name": "python"}})


def main() -> int:
    for stale in HERE.glob("*.ipynb"):
        if stale.stem not in NOTEBOOKS:
            stale.unlink()
    for name, text in NOTEBOOKS.items():
        nb = notebook(name, text)
        nbformat.validate(nb)
        code = sum(1 for c in nb.cells if c.cell_type == "code")
        if not 6 <= code <= 15:
            print(f"{name}: {code} code cells, expected 6-15", file=sys.stderr)
            return 1
        nbformat.write(nb, HERE / f"{name}.ipynb")
    print(f"wrote {len(NOTEBOOKS)} notebooks to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
